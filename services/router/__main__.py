from tiller.router.server import main

main()
