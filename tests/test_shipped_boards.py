"""Every shipped board yaml loads, and every cell's options pass the plugin's validation.

A typo in a board's overrides (or an option a refactor renamed) would otherwise surface hours
into a background run, when the board reaches that cell; here it fails in seconds.  One cell per
dataset x backbone x method x vectors is built (seeds only change `seed`), through the same
`cell_inputs` the runner uses, into a RecBole Config (which runs `validate_options`).
"""

from pathlib import Path

import pytest

from recbole_tfllmer.leaderboard.spec import load_spec
from recbole_tfllmer.options import validate_options
from recbole_tfllmer.quick_start import build_config

REPO = Path(__file__).resolve().parents[1]
BOARDS = sorted((REPO / "leaderboards").glob("*.yaml"))


def test_the_boards_are_found():
    assert len(BOARDS) >= 10 and any(b.stem == "Amazon_Beauty-converged" for b in BOARDS)


@pytest.mark.parametrize("board", BOARDS, ids=lambda p: p.stem)
def test_shipped_board_cells_pass_option_validation(board, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the boards are run from the repository root
    monkeypatch.setenv("HOME", str(tmp_path))  # presets may name an LM under ~/.cache: made below
    spec = load_spec(board)
    seen = set()
    for cell in spec.cells():
        key = (cell.dataset, cell.backbone, cell.method, cell.vectors)
        if key in seen:
            continue
        seen.add(key)
        files, config = spec.cell_inputs(cell)
        requirement = spec.collab_requirement(cell)
        if requirement is not None:  # the runner passes the source cell's export; a stand-in file here
            stand_in = tmp_path / f"{requirement[0].cell_id}.{requirement[1]}"
            stand_in.touch()
            config[requirement[2]] = str(stand_in)
        llm = config.get("allmrec_llm", spec.method_options(cell.method).get("allmrec_llm"))
        if llm:  # a local LM the board's comment says to train first: a stand-in folder (never in $HOME)
            config["allmrec_llm"] = str(tmp_path / "local-lm" / Path(llm).name)
            Path(config["allmrec_llm"]).mkdir(parents=True, exist_ok=True)
        validate_options(build_config(config_file_list=files, config_dict=config))  # build_config validates too
    assert seen, f"{board.name} has no cells"
