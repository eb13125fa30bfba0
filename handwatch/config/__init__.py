"""Configuration: load and validate YAML into frozen typed objects, and resolve which rule applies to a file.

`schema` holds the pydantic models (`Config`, `Folder`, `Rule`, `RuleOverride`, `Endpoint`), `preprocess` the
`preprocess:` options and `web` the `web:` and `notify:` sections, all on `base.Frozen` (frozen, unknown keys
refused); each field's description is the text of the configuration reference, which `reference` renders.
`loader` finds and reads the config file and `.handwatch.yaml` rule files (`loader.load`, `loader.find_config`,
`loader.problems_of`: every problem with its file and key path), through `yamlfile`, the safe, bounded YAML
reader; `rules.RuleBook` resolves defaults ◀ folder ◀ rule files, nearest winning, as a pure function of paths.
Nothing here touches the state database, a model or an image; every stage above uses it.
"""
