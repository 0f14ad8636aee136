from qclassify.cli import main

main()
