"""The run folder: its settings, the finished images as shards, and the consolidated tables.

RUN/run.json            the settings; a rerun with other settings is refused, with the same ones it resumes
RUN/shards/             results-ID.parquet and curves-ID.parquet per finished batch of images; a batch's
                        results shard is written last (atomically), so it marks the batch as done
RUN/heatmaps/           each image's maps, 8-bit PNG at the network's input size
RUN/results.parquet     one row per image and method, RUN/curves.parquet the curves' points (consolidated)
"""
from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

from ..errors import ConvlensError
from ..model.onnx_file import output_folder, write_atomic
from ..render.pictures import encode_png
from .inputs import parquet_module
from .metrics import COLUMNS

RESULT_COLUMNS = ("path", "sha256", "method", "target", "target_label", "probability") + COLUMNS + ("heatmap_file",)
CURVE_COLUMNS = ("path", "method", "metric", "fraction", "probability")


def heatmap_name(sha: str, method: str) -> str:
    return f"heatmaps/{sha[:16]}-{method}.png"


class RunFolder:
    def __init__(self, path, settings: dict):
        self.path = output_folder(path)
        self.settings = settings
        self._pq = parquet_module()
        import pyarrow as pa

        self._pa = pa

    def open(self) -> None:
        """Create the folder, or check that the run in it has these settings (then it resumes)."""
        record = self.path / "run.json"
        if record.exists():
            try:
                before = json.loads(record.read_text())
            except ValueError:
                raise ConvlensError(f"{record} is unreadable; give -o a new folder.") from None
            changed = [k for k in sorted(set(before) | set(self.settings)) if before.get(k) != self.settings.get(k)]
            if changed:
                k = changed[0]
                raise ConvlensError(f"{self.path} holds a run with other settings ({k}: {before.get(k)!r}, now "
                                    f"{self.settings.get(k)!r}); rerun with the same settings to resume it, or "
                                    "give -o a new folder.")
        elif self.path.exists() and any(self.path.iterdir()):
            raise ConvlensError(f"{self.path} exists and is not a convlens evaluate run; give -o a new folder.")
        else:
            write_atomic(record, json.dumps(self.settings, indent=1, sort_keys=True).encode())
        (self.path / "shards").mkdir(parents=True, exist_ok=True)
        for stale in (self.path / "shards").glob(".*.tmp"):  # half-written by a run that was killed
            stale.unlink(missing_ok=True)

    # --- shards -----------------------------------------------------------------------------------------
    def _shards(self) -> list[Path]:
        """Finished shards (their results file), oldest first."""
        found = list((self.path / "shards").glob("results-*.parquet"))
        return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def done(self) -> dict[str, str]:
        """{path: sha256} of the images some finished shard holds."""
        out: dict[str, str] = {}
        for shard in self._shards():
            table = self._pq.read_table(shard, columns=["path", "sha256"])
            out.update(zip(table.column("path").to_pylist(), table.column("sha256").to_pylist()))
        return out

    def write(self, images: list[dict]) -> None:
        """Record finished images (evaluator outputs): heatmaps, then the curves, then the results shard."""
        if not images:
            return
        rows, curves = [], []
        for image in images:
            for row in image["results"]:
                name = heatmap_name(row["sha256"], row["method"])
                write_atomic(self.path / name, encode_png(image["heatmaps"][row["method"]]), force=True)
                rows.append({**row, "heatmap_file": name})
            curves.extend(image["curves"])
        shard = uuid.uuid4().hex
        self._write_table(self.path / "shards" / f"curves-{shard}.parquet", curves, CURVE_COLUMNS)
        self._write_table(self.path / "shards" / f"results-{shard}.parquet", rows, RESULT_COLUMNS)

    def _write_table(self, path: Path, rows: list[dict], columns) -> None:
        table = self._table(rows, columns)
        buf = io.BytesIO()
        self._pq.write_table(table, buf)
        write_atomic(path, buf.getvalue(), force=True)

    def _table(self, rows, columns):
        pa = self._pa
        types = {"target": pa.int64(), "path": pa.string(), "sha256": pa.string(), "method": pa.string(),
                 "target_label": pa.string(), "metric": pa.string(), "heatmap_file": pa.string()}
        schema = pa.schema([(c, types.get(c, pa.float64())) for c in columns])
        return pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=schema)

    # --- consolidation ---------------------------------------------------------------------------------
    def consolidate(self):
        """(results, curves) tables of every finished image, each image once; written to the run folder."""
        import pyarrow.compute as pc

        results, curves, seen = [], [], set()
        for shard in self._shards():
            table = self._pq.read_table(shard)
            paths = set(table.column("path").to_pylist())
            repeated = paths & seen
            curve_file = shard.with_name(shard.name.replace("results-", "curves-"))
            curve_table = self._pq.read_table(curve_file) if curve_file.exists() else self._table([], CURVE_COLUMNS)
            if repeated:  # an image finished twice (two runs into one folder at once): keep its first result
                keep = pc.invert(pc.is_in(table.column("path"), value_set=self._pa.array(sorted(repeated))))
                table = table.filter(keep)
                curve_table = curve_table.filter(pc.invert(pc.is_in(curve_table.column("path"),
                                                                     value_set=self._pa.array(sorted(repeated)))))
            seen |= paths
            results.append(table)
            curves.append(curve_table)
        pa = self._pa
        results = pa.concat_tables(results) if results else self._table([], RESULT_COLUMNS)
        curves = pa.concat_tables(curves) if curves else self._table([], CURVE_COLUMNS)
        results = results.sort_by([("path", "ascending"), ("method", "ascending")])
        for table, name in ((results, "results.parquet"), (curves, "curves.parquet")):
            buf = io.BytesIO()
            self._pq.write_table(table, buf)
            write_atomic(self.path / name, buf.getvalue(), force=True)
        return results, curves
