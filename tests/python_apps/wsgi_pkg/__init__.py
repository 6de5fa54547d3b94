"""A package, so tests can name an app as `package.sub:name`."""
