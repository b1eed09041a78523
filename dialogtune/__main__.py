from dialogtune.cli import main

raise SystemExit(main())
