"""Redraw a run's pictures, tabulate runs, or write TensorBoard events, from run directories.

    python visualize.py log/<run> [log/<run2> ...]   # redraw imgs/<run>/ from the run directory
    python visualize.py log/<run> --projection tsne  # high-D features: pca (default), tsne, umap
    python visualize.py --table log/*                # Markdown table of many runs
    python visualize.py --tensorboard log/<run>      # TensorBoard events in log/<run>/tb/

The pictures are plots.py's, the tables report.py's, the events tboard.py's.
"""
import os
import sys

import plots
import report
from utils import OneLineParser, UserError, error_exit


def build_parser():
    p = OneLineParser(description="Redraw a run's pictures from its run directory, "
                                "or tabulate many runs.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="log/<loss>-<dataset>-feat=<d>[-name]")
    p.add_argument("--out-dir", "--out_dir", default="imgs",
                   help="pictures go to OUT_DIR/<basename of RUN_DIR>/ (default: imgs)")
    p.add_argument("--projection", default="pca", choices=list(plots.PROJECTIONS),
                   help="features above 2-D: how to embed them in 2-D (default: pca)")
    p.add_argument("--table", action="store_true",
                   help="print a Markdown table of the runs instead of drawing")
    p.add_argument("--tensorboard", action="store_true",
                   help="write the runs' TensorBoard events into RUN_DIR/tb/ instead of drawing")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.out_dir or "\0" in args.out_dir:  # "": the pictures would land in the current folder
        parser.error(f"--out-dir {args.out_dir!r} is not a folder name")
    try:
        if args.table:
            print(report.runs_table(args.runs), end="")
            return
        if args.tensorboard:
            import tboard  # needs the tensorboard package only here
            for run in args.runs:
                print(tboard.replay(run), flush=True)
            return
        for run in args.runs:
            out = os.path.join(args.out_dir, os.path.basename(os.path.normpath(run)))
            for path in plots.draw_run(run, out, args.projection):
                print(path, flush=True)
    except UserError as e:
        error_exit(str(e))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:  # pictures are written whole (atomic) or not at all
        error_exit("interrupted", 130)
