"""``python -m hotrain ...`` (what ``torchrun --nproc-per-node N -m hotrain fit ...`` runs)."""

from hotrain.cli import main

if __name__ == "__main__":
    main(prog_name="hotrain")
