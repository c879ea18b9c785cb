"""The workflow spec: parse, template, validate and plan OSMO version-2 YAML. Pure, no I/O."""
