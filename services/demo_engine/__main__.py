from tiller.demo_engine.server import main

main()
