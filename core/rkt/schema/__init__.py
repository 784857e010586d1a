"""Pydantic models of the App Container (appc) schema, spec 0.8.11.

Modules (import the one you need; this package imports nothing on its own so that
``import rkt`` stays free of pydantic):

- :mod:`rkt.schema.types`: AC Identifier, AC Name, image IDs, SemVer, labels,
  annotations, environment variables, isolators (appc-spec/types.md).
- :mod:`rkt.schema.isolators`: the well-known isolators and their value shapes
  (appc-spec/ace.md).
- :mod:`rkt.schema.image`: ``ImageManifest`` and its parts (appc-spec/aci.md).
- :mod:`rkt.schema.pod`: ``PodManifest`` and its parts (appc-spec/pods.md).
- :mod:`rkt.schema.base`: strict parsing, one-line ``ManifestError`` messages, exact
  JSON output shared by all of the above.

Validation follows reference/appc-checklist.md: where the reference Go implementation
is more lenient than the spec text we accept what it accepts (real images were built
with it), except where that would be unsafe; each such choice is documented where it
is made.
"""
