from prefect_wan.cli.app import main

main()
