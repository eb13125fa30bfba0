"""Configuration: load and validate YAML into frozen typed objects, and resolve which rule applies to a file.

`schema` holds the pydantic models (`Config`, `Folder`, `Rule`, `RuleOverride`, `Endpoint`, `Preprocess`,
`Web`), whose field descriptions are the configuration reference; `loader` finds and reads the config file
and `.handwatch.yaml` rule files (`loader.load`, `loader.find_config`, `loader.problems_of`: every problem
with its file and key path); `yamlfile` is the safe, bounded YAML reader; `rules.RuleBook` resolves
defaults ◀ folder ◀ rule files, nearest winning, as a pure function of paths; `web` holds the `web:` and
`notify:` sections. Nothing here touches the state database, a model or an image; everything above uses it.
"""
