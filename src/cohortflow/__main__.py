from cohortflow.cli import main

main()
