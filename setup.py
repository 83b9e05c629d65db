from setuptools import find_packages, setup

setup(
    name="dreamfusion",
    version="0.1.0",
    description="Text-to-3D by Score Distillation Sampling: DreamFusion on a NeRF or 3D Gaussians.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["dreamfusion", "dreamfusion.*"])
    + ["dreamfusion.configs", "dreamfusion.extensions"],
    # the YAML configs and the kernel sources live at the top of the repository and install
    # as dreamfusion.configs and dreamfusion.extensions
    package_dir={"dreamfusion.configs": "configs", "dreamfusion.extensions": "extensions"},
    package_data={"dreamfusion.configs": ["*.yaml"], "dreamfusion.bench": ["data/*"],
                  "dreamfusion.extensions": ["*.md", "hashgrid/*.cpp", "splat/*.cpp",
                                             "meshraster/*.cpp"]},
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.13",               # nearest neighbours (cKDTree) in export and scoring
        "omegaconf>=2.3",
        "PyYAML>=6.0",
        "trimesh>=4.0",
        "PyMCubes>=0.1.4",
        "xatlas>=0.0.9",
        "fast-simplification>=0.1.7",
        "imageio>=2.31",
        "pillow>=10.0",
        "tqdm>=4.66",
        "matplotlib>=3.7",           # the bench's plots
        "safetensors>=0.4",
        "plyfile>=1.0",              # model.ply, the 3D Gaussians in the 3DGS layout
        # the Stable Diffusion and DeepFloyd IF priors; the toy prior needs none of them
        "diffusers>=0.30",
        "transformers>=4.44",
        "huggingface_hub>=0.24",
        "accelerate>=0.30",          # loads large checkpoints without a second copy in memory
        "sentencepiece>=0.2",        # IF's T5 tokenizer ships as a sentencepiece model
        "protobuf>=3.20",            # ... which transformers converts through protobuf
        "ninja>=1.11",               # builds the optional CPU kernel on first use
        "filelock>=3.12",            # one builder at a time for caches that runs share
    ],
    # tiny-cuda-nn has no wheel on PyPI: see the README for its one-line source install
    extras_require={
        # --executor ray: benches and batches as Ray tasks, on this machine or a cluster
        "ray": ["ray>=2.10"],
        # dreamfusion app: the web page; before 6.17.3 Gradio's page loads a script from cdnjs
        # and asks Google for fonts, which an offline machine cannot reach
        "app": ["gradio>=6.17.3"],
        # the app's browser test drives Debian's chromium and chromedriver (.ci/run installs them)
        # gsplat and nerfacc: their pure-PyTorch references, which the rasteriser is held to
        # on a CPU (tests/test_gsplat_reference.py); their CUDA kernels are never built there
        "test": ["pytest>=7.4", "hypothesis>=6.100", "ray>=2.10", "gradio>=6.17.3", "selenium>=4.20",
                 "gsplat>=1.5", "nerfacc>=0.5.3"],
        # gsplat from 1.5: its opacity-aware boxes are the reference's (1.4 cut at a 3-sigma
        # circle, which drops the outer ring of an opaque Gaussian)
        "cuda": ["nerfacc>=0.5.3", "gsplat>=1.5"],
    },
    entry_points={"console_scripts": ["dreamfusion=dreamfusion.cli:main"]},
)
