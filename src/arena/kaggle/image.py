"""The Kaggle GPU image the bundle targets, as data: its Python, platform, the preinstalled versions that matter
to this package, its date, where a kernel finds its inputs, and where each figure comes from. The wheelhouse
(wheels.py), the environment markers, the "what the image lacks" list, the kernel's install, its image check
(kernels/kernel_image.py: Python, torch and the packages the bundle takes from the image, compared at the kernel's
start) and kernel-metadata.json's image pinning follow from it.

Sources (read 2026-12-02):
  [dockerfile] Kaggle/docker-python@78aaa43 (2026-08-12) Dockerfile.tmpl: the GPU image is
      `FROM us-docker.pkg.dev/colab-images/public/runtime:release-colab-external-images_20260514-060047_RC00`,
      `ARG PACKAGE_PATH=/usr/local/lib/python3.12/dist-packages`; it keeps the base image's torch
      (`pip freeze | grep -E 'tensorflow|keras|torch|jax'`) and installs kaggle_requirements.txt over it.
  [late_layer] the same Dockerfile.tmpl, after kaggle_requirements.txt: `uv pip install --system --force-reinstall
      --no-deps torchtune` and `uv pip install --system --force-reinstall "protobuf==5.29.5" "grpcio-tools>=1.60.0"
      "setuptools>=70.0,<82"` ("setuptools v82+ removed pkg_resources"): see LATE_LAYER.
  [kaggle_requirements] Kaggle/docker-python@78aaa43 kaggle_requirements.txt: `transformers>=5.0.0` (no other pin
      on the packages below; torchcodec==0.10.0 "must be compatible with torch version").
  [colab] googlecolab/backend-info@0f0755b (2026-05-14, the Colab runtime of the 20260514 base image):
      pip-freeze.gpu.txt (every version below unless noted) and os-info-gpu.txt ("Ubuntu 22.04.5 LTS",
      "Python 3.12.13"); apt-list-gpu.txt: libc6 2.35 (manylinux_2_35 at most).
Not found: bitsandbytes, gguf, httpx2, httpcore2, truststore are absent from the Colab freeze and from
kaggle_requirements.txt (the wheelhouse ships them). The freeze and kaggle_requirements.txt were read at the cited
commits (0f0755b's pip-freeze.gpu.txt, 731 lines) for every package in PROBED below. Kaggle's `uv pip install -r requirements.txt` layer may move
a version listed here when a Kaggle package needs another one; no published freeze of the final Kaggle image was
found, so the Colab figures stand in for it, except where the late layer reinstalls a package.
Not yet Kaggle's: Colab's later runtimes (backend-info, 2026-08) moved to torch 2.11, transformers 5.15, peft 0.20
and its HEAD to Python 3.13, while Dockerfile.tmpl still names the 20260514 runtime. With "latest" image pinning a
kernel meets such a move unannounced: its image check says in its first line what differs from the figures here,
and stops before pip when a wheel of the wheelhouse does not install on the Python it finds.
"""

from __future__ import annotations

IMAGE = {
    "name": "Kaggle Python GPU image (docker-python on Colab runtime 20260514-060047_RC00)",
    "date": "2026-05-14",
    "python": "3.12",  # [dockerfile] PACKAGE_PATH; [colab] os-info-gpu.txt: Python 3.12.13
    "python_full": "3.12.13",  # [colab] os-info-gpu.txt
    "implementation": "cp",
    "glibc": (2, 35),  # [colab] apt-list-gpu.txt libc6 2.35-0ubuntu3.9 (Ubuntu 22.04.5)
    "machine": "x86_64",
    # kernel-metadata.json: "original" keeps the image a kernel was first run with; "latest" takes each new one.
    # Latest: the figures here describe the current image, and an old pinned one would lack Python 3.12.
    "docker_image_pinning_type": "latest",
    "sources": {
        "dockerfile": "https://github.com/Kaggle/docker-python/blob/78aaa43f8cc8e6b01bbaa5a56c39b4a2f61a8277/"
                      "Dockerfile.tmpl",
        "kaggle_requirements": "https://github.com/Kaggle/docker-python/blob/78aaa43f8cc8e6b01bbaa5a56c39b4a2f61a8277/"
                               "kaggle_requirements.txt",
        "colab": "https://github.com/googlecolab/backend-info/blob/0f0755b/pip-freeze.gpu.txt",
    },
    # Preinstalled versions [colab] pip-freeze.gpu.txt; torch is kept by [dockerfile]; transformers 5.0.0 also
    # satisfies [kaggle_requirements] transformers>=5.0.0. Only the packages this package and its shipped wheels
    # depend on are listed (a stand-in for each is what `arena package` resolves against).
    "preinstalled": {
        "torch": "2.10.0+cu128", "triton": "3.6.0",
        "transformers": "5.0.0", "tokenizers": "0.22.2", "safetensors": "0.7.0", "huggingface-hub": "1.11.0",
        "accelerate": "1.13.0", "peft": "0.19.1",
        "numpy": "2.0.2", "pandas": "2.2.2", "pyarrow": "18.1.0", "scikit-learn": "1.6.1", "scipy": "1.16.3",
        "joblib": "1.5.3",
        "threadpoolctl": "3.6.0", "pyyaml": "6.0.3", "tqdm": "4.67.3", "packaging": "26.1", "psutil": "5.9.5",
        "regex": "2025.11.3", "requests": "2.32.4", "urllib3": "2.5.0", "certifi": "2026.4.22",
        "charset-normalizer": "3.4.7", "idna": "3.13", "filelock": "3.29.0", "fsspec": "2025.3.0",
        "hf-xet": "1.4.3", "typing-extensions": "4.15.0", "jinja2": "3.1.6", "markupsafe": "3.0.3",
        "networkx": "3.6.1", "sympy": "1.14.0", "mpmath": "1.3.0",
        "setuptools": "81.0.0",  # [late_layer] replaces the freeze's 75.2.0: LATE_LAYER
        "python-dateutil": "2.9.0.post0", "pytz": "2025.2", "tzdata": "2026.1", "six": "1.17.0",
        "click": "8.3.3", "typer": "0.24.2", "shellingham": "1.5.4", "rich": "13.9.4", "pygments": "2.20.0",
        "markdown-it-py": "4.0.0", "mdurl": "0.1.2", "annotated-doc": "0.0.4", "annotated-types": "0.7.0",
        "anyio": "4.13.0", "h11": "0.16.0", "pydantic": "2.12.3", "pydantic-core": "2.41.4",
        "typing-inspection": "0.4.2", "cloudpickle": "3.1.2", "narwhals": "2.20.0",
        # What the image's own transformers 5.0.0 (typer-slim) and huggingface-hub 1.11.0 (httpx) require: the
        # kernel's pip resolves their requirements too (found by the twin: without them `pip install --no-index`
        # stopped at "No matching distribution found for typer-slim").
        "typer-slim": "0.24.0", "httpx": "0.28.1", "httpcore": "1.0.9",
        "pip": "24.1.2",  # the kernel's installer: `python -m pip install --no-index ...`
        # Probed, not required (see PROBED): present on the image, so every import there sees them.
        "torchao": "0.10.0",
        "torchtune": "0.6.1",  # [kaggle_requirements], reinstalled unpinned by [late_layer]: LATE_LAYER
    },
    "absent": ["bitsandbytes", "gguf", "httpx2", "httpcore2", "truststore"],
}


# Dockerfile.tmpl's late layer [late_layer]: name -> (what it asks for, the version it leaves). `--force-reinstall`
# resolves afresh to the newest release that fits (why setuptools is capped: before the cap it left setuptools 82+,
# although nothing there asks for more than `setuptools`); the versions are those newest ones, read with `pip index
# versions` and the packages' metadata (2026-12). Only setuptools and torchtune are also in "preinstalled".
LATE_LAYER = {
    "torchtune": ("torchtune (unpinned, --no-deps)", "0.6.1"),  # its newest release: the freeze's version stays
    "protobuf": ("protobuf==5.29.5", "5.29.5"),
    "grpcio-tools": ("grpcio-tools>=1.60.0", "1.71.2"),  # the newest whose protobuf range (<6.0dev) admits 5.29.5
    "setuptools": ("setuptools>=70.0,<82", "81.0.0"),  # the newest below 82 (grpcio-tools 1.71.2 asks any)
}

# Where a kernel's inputs are mounted under /kaggle/input, in the order kernels/kernel_inputs.py looks (find_input,
# find_base_model): Kaggle's current layout, the older one, and there the mount of inputs whose slugs clash (two
# attached inputs of one slug: each under its owner) (DESIGN.md, "Facts about Kaggle as it is now").
MOUNTS = {
    "competition": ["competitions/{slug}", "{slug}"],
    "dataset": ["datasets/{owner}/{slug}", "{slug}", "{owner}/{slug}"],
    "model": ["models/{owner}/{model}/{framework}/{variation}/{version}", "{model}/{framework}/{variation}/{version}"],
}


# Optional packages that this package's dependencies look for (find_spec / importlib.metadata) on the paths arena
# runs: peft's LoRA dispatch (peft/tuners/lora/model.py _create_new_module: one dispatcher per backend, in turn, for
# every target layer), transformers' quantizers, attention and Trainer integrations, accelerate's launch and
# plugins. name -> its version on the image ([colab] pip-freeze.gpu.txt at 0f0755b, [kaggle_requirements]), or
# None: absent from both. A present one is in "preinstalled" (the wheelhouse proof stands it in, the twin installs
# it) unless TWIN says why not.
PROBED = {
    # present
    "torchao": "0.10.0",  # peft is_torchao_available() RAISES for < 0.16 (peft 0.21.2 import_utils.py); transformers
                          # and accelerate compare versions. The trap: arena.versions.peft_without_old_torchao.
    "torchtune": "0.6.1",  # not probed by transformers / peft / accelerate; listed (DESIGN.md) for the proof
    "triton": "3.6.0",  # transformers, accelerate (kernels, fp8): comes with the CUDA torch
    "datasets": "4.0.0",  # transformers' Trainer imports it when present (training kernels only)
    "diffusers": "0.37.1",  # peft: only for diffusers models
    "timm": "1.0.26",  # transformers / peft: timm backbones only
    "torchdata": "0.11.0",  # accelerate: its StatefulDataLoader only when asked
    "wandb": "0.26.1", "tensorboard": "2.20.0",  # Trainer report_to: arena sets it explicitly
    "nvidia-ml-py": "13.595.45",  # accelerate (pynvml): GPU queries
    "sentencepiece": "0.2.1", "tiktoken": "0.12.0",  # slow-tokenizer conversion; arena's tokenizers are fast ones
    "protobuf": "5.29.5",  # [late_layer]; transformers: slow-tokenizer conversion too
    # absent
    "bitsandbytes": None, "optimum": None, "optimum-quanto": None, "auto-gptq": None, "gptqmodel": None,
    "autoawq": None, "hqq": None, "eetq": None, "aqlm": None, "neural-compressor": None, "megatron-core": None,
    "transformer-engine": None, "compressed-tensors": None, "fbgemm-gpu": None, "vptq": None, "auto-round": None,
    "kernels": None, "flash-attn": None, "liger-kernel": None, "deepspeed": None, "msamp": None, "mlflow": None,
    "schedulefree": None, "lomo-optim": None, "apex": None, "gguf": None,
}

# The Kaggle twin (`arena kernel run-local`, kaggle/twin.py): a virtualenv of THIS machine's Python holding the
# "preinstalled" versions above (pip --no-deps: exactly the list), except these substitutions, each stated in
# every rehearsal's log. Every listed version has a wheel for Python 3.11 (checked 2026-12-02 with
# `pip download --no-deps --only-binary=:all: --python-version 3.11`), so none is moved.
TWIN = {
    "python": "this machine's Python stands in for 3.12 (a cp312-only wheel would not install in the twin; the "
              "wheelhouse proof, `arena package`, checks the real 3.12 tags)",
    "torch": "this machine's CPU build (pinned by a constraints file, never a CUDA download) stands in for the "
             "image's CUDA build: no GPU here",
    "triton": "not installed: the CUDA torch's GPU compiler, which the CPU build neither needs nor uses",
    "torchtune": "not installed: nothing here imports or probes it, and without its 8 own dependencies (not "
                 "listed) the kernel's pip would report it broken; the wheelhouse proof still stands it in",
    "datasets diffusers timm torchdata wandb tensorboard nvidia-ml-py sentencepiece tiktoken protobuf":
        "not installed: present on the image but probed only on paths the inference kernel does not take "
        "(PROBED); their own dependencies would double the twin",
}


# Versions the twin installs instead of the image's, each forced by a substitution in TWIN (stated there). None now:
# the late layer's setuptools 81.0.0 meets the CPU stand-in torch 2.13.0's setuptools>=77.0.3.
TWIN_VERSIONS: dict[str, str] = {}


def platform_tags() -> list[str]:
    """pip --platform values for the image: manylinux2014 and manylinux_2_17 ... up to its glibc."""
    major, minor = IMAGE["glibc"]
    machine = IMAGE["machine"]
    return [f"manylinux2014_{machine}", *(f"manylinux_{major}_{m}_{machine}" for m in range(17, minor + 1))]


def markers() -> dict[str, str]:
    """PEP 508 environment markers of the image's Python."""
    return {"python_version": IMAGE["python"], "python_full_version": IMAGE["python_full"], "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": IMAGE["machine"],
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def preinstalled(name: str) -> str | None:
    from packaging.utils import canonicalize_name

    return {canonicalize_name(n): v for n, v in IMAGE["preinstalled"].items()}.get(canonicalize_name(name))
