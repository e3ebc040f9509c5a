from vreid.workflows.cli import main

main()
