"""Inserted by `arena package` and `arena kaggle train` where a kernel template says `# @include kernel_image.py`:
the kernel's first look at the image it runs on. Kaggle's image moves under a kernel pinned to the "latest" one
without notice (a new Python, another torch), so before anything is installed the kernel compares this Python and
the packages the bundle takes from the image with what it was built for (src/arena/kaggle/image.py, filled in at
package time) and says in one line what differs; a wheelhouse with a wheel that cannot install on this interpreter
(no tag of the wheel among the ones it supports: cp312-only wheels on Python 3.13) stops the kernel with that line
before pip runs. Uses ROOT (the including kernel's) and fail (kernel_inputs.py's)."""

import sys
from collections.abc import Callable
from pathlib import Path

ROOT: Path
fail: Callable[[str], None]

# ---- from here on, inserted into the kernel ----
# What the bundle was built for (src/arena/kaggle/image.py): the image's Python, the versions of torch and of every
# package the bundle takes from the image, and those the local rehearsal's twin stands in for.
IMAGE_PYTHON = "__IMAGE_PYTHON__"
IMAGE_PACKAGES = "__IMAGE_PACKAGES__"
TWIN_STANDS_IN = "__TWIN_STANDS_IN__"


def check_image(wheels: Path) -> None:
    """Print `kernel: image: ...`, what differs from the image the bundle was built for (or that nothing does); stop
    with that line when a wheel in `wheels` would not install here (pip's own tags for this interpreter)."""
    from importlib import metadata

    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import parse_wheel_filename

    found = {"python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    for name in IMAGE_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    stood_in = TWIN_STANDS_IN if ROOT != Path("/kaggle") else []  # `arena kernel run-local`: its known stand-ins
    differs = [f"{name} {found[name]} (built for {want}{'; the rehearsal stands in' if name in stood_in else ''})"
               for name, want in {"python": IMAGE_PYTHON, **IMAGE_PACKAGES}.items() if found[name] != want]
    line = "image: " + ("; ".join(differs) or f"as built for: Python {IMAGE_PYTHON} and the packages the bundle "
                        f"takes from the image ({len(IMAGE_PACKAGES)})")
    supported = set(sys_tags())
    unusable = [w.name for w in sorted(wheels.glob("*.whl")) if supported.isdisjoint(parse_wheel_filename(w.name)[3])]
    if unusable:
        fail(f"{line}. The wheelhouse does not install on Python {found['python']} here: no tag of "
             f"{', '.join(unusable)} is one this interpreter supports; package the run again for this image "
             f"(src/arena/kaggle/image.py)")
    print(f"kernel: {line}", flush=True)
