"""Intake: notice files in the watched folders and feed the ones worth transcribing into the job store.

`watch.Watcher` runs the watchdog observers (inotify or polling, chosen per folder by `wants_polling`) and
the start-up walk; `settle.Settler` decides, as a pure function of sizes, times and an injected clock, when
a file is completely written; `feed.Intake` turns settled paths into jobs (hashing them off the watchdog's
thread); `candidates.Candidates` says which paths the folder's rules include. It writes only to the job
store; everything downstream starts from a job.
"""
