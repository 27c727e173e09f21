"""The serving contract: facts that the exporter, the config generator, the in-stub runtime and
the tests share. It depends on nothing but the standard library, so every layer may import it."""
