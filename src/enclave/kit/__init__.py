"""The offline site kit: everything an air-gapped site needs, in one signed, verifiable directory (issue #18).

    DIR/
      KIT.json        what the kit holds and the size + sha256 of every other file; the one signed document
      KIT.json.sig    ssh-keygen -Y sign (namespace enclave-kit) by the kit key
      KIT.pub         the kit key's public half (trusted only through a pinned fingerprint or allowed_signers)
      KIT.sha256      `sha256  size  path` lines, the same list as KIT.json, for sha256sum-minded operators
      apt/            a signed flat apt repository (apt.py)
      wheels/...      hash-locked wheelhouses (controller, hub client, engine)
      weights/...     the `enclave weights pack` bundle
      DELTA.json(.sig) only in a delta kit: the base kit it applies to (delta.py)

manifest.py hashes and signs, delta.py makes and applies deltas, apt.py builds the package repository,
build.py collects the artifacts an inventory needs. The core never prints: progress goes through `report`.
"""
