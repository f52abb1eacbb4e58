from indexd.cli import main

raise SystemExit(main())
