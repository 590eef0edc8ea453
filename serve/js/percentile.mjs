// The q-th percentile (0-100) with linear interpolation between closest ranks: the same definition as Python's
// serve.loadtest.percentile (and numpy's default); NaN for no values.
export function percentile(values, q) {
  const ordered = [...values].sort((a, b) => a - b);
  if (ordered.length === 0) return NaN;
  const position = ((ordered.length - 1) * q) / 100;
  const low = Math.floor(position);
  const high = Math.min(low + 1, ordered.length - 1);
  return ordered[low] + (ordered[high] - ordered[low]) * (position - low);
}
