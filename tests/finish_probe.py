"""Run under `accelerate launch` by tests/test_finish.py: a tiny run trained by every rank, and the validation rows
each rank predicted in the run's finish, gathered on the main process and printed as JSON.
`python -m tests.finish_probe CONFIG_JSON`."""

import json
import sys


def main() -> None:
    from arena import config, predict, processes, train

    cfg = config.from_dict(json.loads(sys.argv[1]))
    seen: list[str] = []
    real = predict.predict_frame

    def recorded(model, tokenizer, df, *args, **kwargs):
        seen.extend(df["id"].astype(str))
        return real(model, tokenizer, df, *args, **kwargs)

    predict.predict_frame = recorded
    run = train.train(cfg)
    gathered = processes.gather_to_main(seen, cpu=True)
    if gathered is not None:
        print("FINISH " + json.dumps({"run": str(run), "rows": gathered}), flush=True)
    if processes.finish():
        processes.leave(0)  # as `arena` ends a rank


if __name__ == "__main__":
    main()
