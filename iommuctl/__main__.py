from iommuctl.cli import main

main()
