import sys

from runner.store.migrations import main

sys.exit(main())
