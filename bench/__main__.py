from .benchmark import main

main()
