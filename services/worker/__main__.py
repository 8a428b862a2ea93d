from tiller.worker.server import main

main()
