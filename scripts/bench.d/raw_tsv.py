"""The raw figures scripts/bench and peers.sh write: a header, then rep/path/metric/value rows.

One reader, so that the reports agree on which rows count: a row without exactly four fields,
or whose value is not a number (FAIL, empty), is skipped.
"""


def read_rows(path):
    """(rep, path, metric, value) for each row with a numeric value, in file order."""
    with open(path, encoding="utf-8") as f:
        next(f, None)
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            rep, path_name, metric, value = parts
            try:
                number = float(value)
            except ValueError:
                continue
            yield rep, path_name, metric, number
