"""Infrastructure every package may use: atomic files and folders (utils), every output
path in one place (paths), command-line habits (cli). Imports nothing else of lib."""
