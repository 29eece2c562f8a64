"""mkdocs hook: add the reference pages docs/gen_reference.py generates from the code."""
import sys
from pathlib import Path

from mkdocs.structure.files import File

DOCS = Path(__file__).resolve().parent


def on_files(files, config):
    sys.path.insert(0, str(DOCS))
    try:
        import gen_reference
    finally:
        sys.path.remove(str(DOCS))
    for path, text in gen_reference.pages().items():
        files.append(File.generated(config, path, content=text))
    return files
