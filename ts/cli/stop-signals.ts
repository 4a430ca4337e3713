// How `train` stops on request: SIGINT, SIGTERM, SIGHUP (a closed terminal)
// and, in a data-parallel job, the launcher's SIGUSR2 finish the current step
// and write a checkpoint; so does a closed stdout (`| head`, or the reader of
// a pipeline killed by the same Ctrl-C): the checkpoint is written either way,
// never skipped for an EPIPE. A second signal exits at once.
import { STOP_SIGNAL } from '../train/distributed.js';
import { setOutputClosedHandler } from './output.js';

/** 128 + the signal number, as a shell reports a process killed by it. */
export const EXIT_CODES: Record<string, number> = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143, SIGUSR2: 140 };

export class StopOnSignals {
  /** The signal that asked for the stop, if one did. */
  signal: string | undefined;
  private stopping = false;
  private readonly handlers: (readonly [NodeJS.Signals, () => void])[];

  constructor(
    trainer: { requestStop(): void },
    dataParallel: boolean,
    notify: (notice: string) => void,
  ) {
    const onSignal = (sig: NodeJS.Signals) => {
      if (this.stopping) {
        console.error(`\n${sig} again: exiting without a final checkpoint`);
        process.exit(EXIT_CODES[sig] ?? 1);
      }
      this.stopping = true;
      this.signal = sig;
      notify(`${sig === STOP_SIGNAL ? 'stop requested (SIGUSR2 from the launcher)' : sig}: finishing this step and writing a checkpoint (press Ctrl-C again to abort)`);
      trainer.requestStop();
    };
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', ...(dataParallel ? [STOP_SIGNAL] : [])];
    this.handlers = signals.map((sig) => [sig, () => onSignal(sig)] as const);
    for (const [sig, h] of this.handlers) process.on(sig, h);
    setOutputClosedHandler((stream) => {
      if (stream === 'stdout' && !this.stopping) {
        this.stopping = true;
        trainer.requestStop();
      }
    });
  }

  /** Back to the defaults; the summary lines still to come must not turn a dead reader into exit 0. */
  dispose(): void {
    for (const [sig, h] of this.handlers) process.off(sig, h);
    setOutputClosedHandler(() => undefined);
  }
}
