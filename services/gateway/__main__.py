from tiller.gateway.server import main

main()
