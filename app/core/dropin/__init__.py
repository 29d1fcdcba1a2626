"""Drop-in batches: the user's own batch, created whole through the OpenAI or Anthropic face.

files.py stores uploaded and produced files under DATA_DIR; create.py validates an input file
(or a request list) and creates the batch with its requests in one transaction, never mixed with
other requests; finish.py expires overdue drop-in batches and writes the output and error files
of ended ones. The faces (app/api/openai, app/api/anthropic) only translate to and from these.
"""
