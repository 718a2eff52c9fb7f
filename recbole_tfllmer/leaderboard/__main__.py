import sys

from recbole_tfllmer.leaderboard.command import main

sys.exit(main())
