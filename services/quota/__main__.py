from tiller.quota.server import main

main()
