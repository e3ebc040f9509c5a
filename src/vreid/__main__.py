from vreid.cli import main

main()
