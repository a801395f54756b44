from omnispindle.cli.main import main

raise SystemExit(main())
