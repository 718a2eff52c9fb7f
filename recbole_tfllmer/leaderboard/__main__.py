import sys

from recbole_tfllmer.leaderboard.command import main
from recbole_tfllmer.leaderboard.spec import SpecError

try:
    sys.exit(main())
except SpecError as err:  # a bad board yaml or flag: one line, not a traceback
    print(f"python -m recbole_tfllmer.leaderboard: error: {err}", file=sys.stderr)
    sys.exit(2)
