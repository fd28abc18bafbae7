"""The run directory: reader, writer, manifest, storage on local disk and object stores."""
