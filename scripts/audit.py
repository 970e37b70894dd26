#!/usr/bin/env python3
"""Supply-chain check of Cargo.lock.

1. `cargo audit` (RustSec advisories) when cargo-audit is installed and its advisory database
   can be fetched (it comes from GitHub).
2. Always: every crates.io package of Cargo.lock against the crates.io index, reporting the
   versions their authors have yanked (withdrawn), which is how broken and vulnerable releases
   are usually pulled, and packages not from crates.io.

Exit status 1 when either finds something. Run: `python3 scripts/audit.py`.
"""
import concurrent.futures
import json
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

root = Path(__file__).resolve().parent.parent
lock = tomllib.loads((root / "Cargo.lock").read_text())
packages = lock["package"]
registry = "registry+https://github.com/rust-lang/crates.io-index"

status = 0
print("== cargo audit")
try:
    r = subprocess.run(["cargo", "audit", "--file", str(root / "Cargo.lock")], capture_output=True, text=True)
    out = (r.stdout + r.stderr).strip()
    if "no such command" in out or "no such subcommand" in out:
        print("cargo-audit is not installed (cargo install cargo-audit): advisories not checked")
    elif r.returncode != 0 and ("github.com" in out or "fetch" in out.lower()):
        print("the advisory database could not be fetched: advisories not checked")
        print("  " + out.splitlines()[-1] if out else "")
    else:
        print(out)
        status |= r.returncode != 0
except FileNotFoundError:
    print("cargo not found")


def index_path(name: str) -> str:
    n = name.lower()
    if len(n) <= 2:
        return f"{len(n)}/{n}"
    if len(n) == 3:
        return f"3/{n[0]}/{n}"
    return f"{n[:2]}/{n[2:4]}/{n}"


def versions(name: str) -> dict:
    url = f"https://index.crates.io/{index_path(name)}"
    with urllib.request.urlopen(url, timeout=30) as f:
        return {e["vers"]: e for e in map(json.loads, f.read().decode().splitlines())}


print("\n== crates.io index: yanked versions in Cargo.lock")
from_registry = [p for p in packages if p.get("source") == registry]
other = [p for p in packages if "source" in p and p.get("source") != registry]
names = sorted({p["name"] for p in from_registry})
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    index = dict(zip(names, pool.map(versions, names)))
yanked = []
for p in from_registry:
    entry = index[p["name"]].get(p["version"])
    if entry is None:
        yanked.append(f"{p['name']} {p['version']}: not in the index")
    elif entry.get("yanked"):
        yanked.append(f"{p['name']} {p['version']}: yanked")
print(f"{len(from_registry)} packages ({len(names)} crates) from crates.io checked; "
      f"{len(yanked)} yanked or missing")
for y in yanked:
    print("  " + y)
for p in other:
    print(f"  not from crates.io: {p['name']} {p['version']} ({p['source']})")
status |= bool(yanked)
sys.exit(status)
