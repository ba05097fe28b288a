"""Modeling code shipped inside exported Ruyi2-layout folders (``auto_map``), loaded by transformers with
``trust_remote_code=True``. The files are copied as they are: they import only torch and transformers."""
