"""Building the data folder from the public sources: `harness data fetch` and `harness data verify`.

- `plan`: the four sources (repository, pinned commit, licence) and, for every file of the data folder,
  the source files it is made from and the converter that makes it;
- `convert`: the converters, pure functions from the bytes of source files to the bytes of one file;
- `fetch`: getting the source files (HTTPS at the pinned commit, or local copies) and building;
- `manifest`: the shipped checksum manifest (`manifest.json`), checking a folder against it, writing it.
"""
