"""Hugging Face Hub ids: `hf:ORG/NAME[@REVISION]` names a model folder (model_folder.py)
in a Hub repository. huggingface_hub fetches it into its cache, or finds it there: its
cache folder (`HF_HUB_CACHE`), offline mode (`HF_HUB_OFFLINE=1`), tokens and mirrors
(`HF_TOKEN`, `HF_ENDPOINT`) all apply. A revision (branch, tag or commit) after `@` pins
the files; without one, `main`.

huggingface_hub takes about a second to import: it is imported when an id is resolved.
"""

from __future__ import annotations

from pathlib import Path

from seq2seq.errors import UserError

PREFIX = "hf:"
# The files a model folder may hold: nothing else in the repository is downloaded.
FOLDER_FILES = ["*.json", "*.safetensors", "*.model", "*.onnx", "README.md"]


def is_hub_id(model: str | Path) -> bool:
    return str(model).startswith(PREFIX)


def local_folder(model: str | Path) -> Path:
    """The folder of the Hub id `model` in huggingface_hub's cache, downloaded if missing
    (and allowed); a missing repository or revision, or no connection and no cached
    copy, is one line naming the id."""
    import huggingface_hub
    from huggingface_hub import errors

    repo, _, revision = str(model).removeprefix(PREFIX).partition("@")
    try:
        folder = huggingface_hub.snapshot_download(
            repo,
            revision=revision or None,
            allow_patterns=FOLDER_FILES,
            library_name="seq2seq",
        )
    except errors.HFValidationError as error:
        reason = str(error).splitlines()[0]
        raise UserError(f"{model}: not a Hub id hf:ORG/NAME[@REVISION] ({reason})") from None
    except errors.RevisionNotFoundError:
        raise UserError(f"{model}: the repository has no revision {revision!r}") from None
    except errors.RepositoryNotFoundError:
        raise UserError(
            f"{model}: no such model repository on the Hub (or it is private: set HF_TOKEN)"
        ) from None
    except errors.LocalEntryNotFoundError:
        settings = huggingface_hub.constants
        why = "HF_HUB_OFFLINE is set" if settings.HF_HUB_OFFLINE else "the Hub cannot be reached"
        raise UserError(
            f"{model}: not in the Hugging Face cache ({settings.HF_HUB_CACHE}) and {why}; "
            "fetch it once online, or give a local model folder"
        ) from None
    except (errors.HfHubHTTPError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{model}: cannot fetch from the Hub ({reason[:160]})") from None
    return Path(folder)
