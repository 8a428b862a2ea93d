from tiller.cli.main import main

main()
