"""Finding a Vulkan driver for LiteRT's GPU accelerator, and the environment a GPU child needs.

LiteRT's GPU accelerator (WebGPU through Dawn) needs a Vulkan loader (``libvulkan.so.1``)
and a Vulkan driver (an ICD JSON file). On a machine without a GPU, Google's SwiftShader
driver, shipped by Debian's ``chromium`` package, serves: its ICD is
``/usr/lib/chromium/vk_swiftshader_icd.json`` and chromium carries its own loader next to it.

The accelerator runs in a child process (``runners/litert.py``), whose environment
``gpu_child_env`` makes. Environment override: ``MIRROR_VK_ICD`` (the only ICD JSON file to try).
"""

from __future__ import annotations

import ctypes.util
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SWIFTSHADER_ICD = Path("/usr/lib/chromium/vk_swiftshader_icd.json")
INSTALL_HINT = "apt-get install chromium (it ships Google's SwiftShader Vulkan driver)"
_ICD_CANDIDATES = (
    SWIFTSHADER_ICD,
    Path("/usr/lib64/chromium/vk_swiftshader_icd.json"),
    Path("/usr/lib/chromium-browser/vk_swiftshader_icd.json"),
)


@dataclass
class VulkanDriver:
    """Where the Vulkan driver (ICD) and loader are, or why none was found."""

    icd: Path | None  # the ICD JSON file
    loader: Path | None  # libvulkan.so.1 to put on LD_LIBRARY_PATH, None if the system has one
    checked: list[str] = field(default_factory=list)  # the paths looked at, in order
    reason: str = ""  # why the driver is unusable ("" when usable)

    @property
    def found(self) -> bool:
        return self.icd is not None and not self.reason

    @property
    def name(self) -> str:
        if self.icd is None:
            return "none"
        return "SwiftShader Vulkan" if "swiftshader" in self.icd.name.lower() else "Vulkan"

    def describe(self) -> str:
        if self.found:
            where = f"loader {self.loader}" if self.loader else "system loader"
            return f"{self.name} driver {self.icd} ({where})"
        return self.reason


def find_vulkan_driver() -> VulkanDriver:
    """Locate a Vulkan ICD usable by LiteRT's WebGPU accelerator (SwiftShader first)."""
    checked: list[str] = []
    candidates: list[Path] = []
    override = os.environ.get("MIRROR_VK_ICD")
    if override:
        candidates.append(Path(override))  # exclusive: the defaults are not tried
    else:
        candidates.extend(_ICD_CANDIDATES)
    icd = None
    for cand in candidates:
        checked.append(str(cand))
        if cand.is_file():
            icd = cand
            break
    if icd is None:
        return VulkanDriver(
            None,
            None,
            checked,
            f"no Vulkan driver: {checked[0]} not found; install it with {INSTALL_HINT}",
        )
    try:
        lib = json.loads(icd.read_text())["ICD"]["library_path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return VulkanDriver(icd, None, checked, f"unreadable Vulkan ICD file {icd}: {exc}")
    lib_path = (icd.parent / lib) if not os.path.isabs(lib) else Path(lib)
    checked.append(str(lib_path))
    if "/" in lib and not lib_path.is_file():
        return VulkanDriver(
            icd, None, checked, f"Vulkan ICD {icd} names a missing driver library {lib_path}"
        )
    # The loader: the system's, else the one chromium ships next to its ICD.
    if ctypes.util.find_library("vulkan"):
        return VulkanDriver(icd, None, checked)
    bundled = icd.parent / "libvulkan.so.1"
    checked.append(str(bundled))
    if bundled.is_file():
        return VulkanDriver(icd, bundled, checked)
    return VulkanDriver(
        icd,
        None,
        checked,
        f"no Vulkan loader: libvulkan.so.1 is neither installed nor next to {icd}; "
        "install libvulkan1 or chromium",
    )


def gpu_child_env(driver: VulkanDriver, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that loads LiteRT's GPU accelerator on ``driver``."""
    env = dict(os.environ if base is None else base)
    if driver.icd is None:
        return env
    env["VK_ICD_FILENAMES"] = str(driver.icd)
    env["VK_DRIVER_FILES"] = str(driver.icd)
    runtime_dir = Path(tempfile.gettempdir()) / f"mirror-xdg-{os.getuid()}"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    env.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    if not os.access(env["XDG_RUNTIME_DIR"], os.W_OK):
        env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    if driver.loader is not None:
        # A folder holding only the loader, so chromium's other libraries stay out of the way.
        shim = Path(tempfile.gettempdir()) / f"mirror-vulkan-loader-{os.getuid()}"
        shim.mkdir(exist_ok=True)
        link = shim / "libvulkan.so.1"
        if not link.exists() or link.resolve() != driver.loader.resolve():
            tmp = shim / f".libvulkan.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(driver.loader)
            os.replace(tmp, link)
        old = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = str(shim) + (os.pathsep + old if old else "")
    return env
