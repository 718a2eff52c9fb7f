"""Run a RecBole experiment with the TF-LLMER plugin, as RecBole's run_recbole.py does.

python run_recbole_tfllmer.py -m TFLLMER -d ml-100k --config_files properties/ml-100k.yaml
"""

import sys

from recbole_tfllmer.cli import main

if __name__ == "__main__":
    sys.exit(main())
