from diffaug.cli import main

main()
