# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing and installs the project (editable, with dev extras)
# pinned by constraints.txt, then runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kdvision-installed
DEMO_OUT ?= runs/demo

.PHONY: demo demo-oct demo-face demo-sweep test bench gpu-check install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,clinic]'
	# oct-converter declares opencv-python, whose cv2 would overwrite opencv-python-headless's (see pyproject.toml)
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt oct-converter
	touch $(STAMP)

demo: demo-oct demo-face

demo-oct: $(STAMP)
	$(BIN)/medkd run pipelines/kd_oct_demo.yaml --out $(DEMO_OUT)/oct

demo-face: $(STAMP)
	$(BIN)/facekd run pipelines/face_kd_demo.yaml --out $(DEMO_OUT)/face

demo-sweep: $(STAMP)
	$(BIN)/medkd sweep pipelines/kd_oct_demo.yaml --space pipelines/spaces/kd_oct_demo.yaml --trials 8 --folds 0 \
		--seed 0 --out $(DEMO_OUT)/sweep

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --out benchmarks/results.json

# KD-OCT's pair at the real sizes on a CUDA device -> benchmarks/gpu_results.json; without CUDA it says so, exit 0
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --out benchmarks/gpu_results.json

clean:
	rm -rf $(VENV) runs build dist .pytest_cache
