#pragma once
// SIGUSR1 (Slurm's --signal before a time limit) and SIGTERM (preemption) ask the job to checkpoint and
// exit with code 3 so that it is requeued. The handlers only record the signal; the trainer agrees on it
// across ranks at a step boundary. They are installed first thing in main, so that a signal during the
// start-up (writing a synthetic dataset, loading a large checkpoint) is not fatal either.
namespace ov {

void install_stop_signal_handlers();
// The signal received so far (SIGUSR1 or SIGTERM), or 0. Local: agree on it before acting.
int stop_signal();

}  // namespace ov
