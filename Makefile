# Two commands set everything up on a fresh machine (only Python 3.11 needed):
#   make demo   - TF-LLMER (SASRec backbone) on ml-100k with the offline MiniLM encoder
#   make test   - the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint leaderboard converged clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.2"
	# torch first and pinned: this is the local CPU build; an unpinned torch pulls GBs of CUDA wheels.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,plots]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python run_recbole_tfllmer.py --config_files "properties/ml-100k.yaml properties/demo.yaml"

test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/python -m ruff check --fix .
	$(BIN)/python -m ruff format .

# Long: runs (or resumes) a board, ml-100k by default (make leaderboard BOARD=ml-100k-tuned);
# see README "Leaderboard".
BOARD ?= ml-100k
leaderboard: $(STAMP)
	$(BIN)/python -m recbole_tfllmer.leaderboard --config leaderboards/$(BOARD).yaml

# The converged boards in the background, one worker per board (one torch thread each); run it
# again after any stop: finished cells are skipped and a half-finished cell resumes. ONLY=...
# filters cells (e.g. ONLY=method=RandInit,LLMInit,NormOnly); CONVERGED=... picks boards (on 2 cores,
# run two or three at a time). Logs: ~/.cache/recbole_tfllmer/.
CONVERGED ?= Amazon_Beauty-converged Amazon_Toys-converged ml-100k-converged ml-100k-cand20 ml-100k-allmrec-s1 \
	Amazon_Beauty-cand20
ONLY ?=
converged: $(STAMP)
	mkdir -p $(HOME)/.cache/recbole_tfllmer
	for b in $(CONVERGED); do \
	  if pgrep -f "leaderboards/$$b.yaml" >/dev/null; then echo "$$b: already running (add a worker by hand if you want two)"; continue; fi; \
	  nohup $(BIN)/python -m recbole_tfllmer.leaderboard --config leaderboards/$$b.yaml --threads 1 --no-plots \
	    $(if $(ONLY),--only $(ONLY)) >> $(HOME)/.cache/recbole_tfllmer/$$b.log 2>&1 & \
	done

clean:
	rm -rf saved log log_tensorboard .pytest_cache
