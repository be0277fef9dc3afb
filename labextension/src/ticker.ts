/**
 * A once-a-second re-render (running durations, ages) as a lumino `Poll`:
 * started and stopped by its view, standing by while the browser tab is
 * hidden, so a hidden Lab does no work for clocks nobody sees.
 */
import { Poll } from '@lumino/polling';

export function secondTicker(name: string, render: () => void): Poll {
  return new Poll({
    name: `jupyter-taskrun:${name}`,
    auto: false,
    factory: async () => render(),
    frequency: { interval: 1000, backoff: false },
    standby: 'when-hidden'
  });
}
