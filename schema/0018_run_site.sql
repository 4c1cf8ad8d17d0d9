-- The site each run worked for (SPEC section 9), as the run history's JSON shows it: the
-- store's site when the run was recorded (a run's process has bound the store to it first).
ALTER TABLE job_runs ADD COLUMN site TEXT;
CREATE TRIGGER job_runs_site AFTER INSERT ON job_runs WHEN NEW.site IS NULL
BEGIN
    UPDATE job_runs SET site = (SELECT site_id FROM site WHERE singleton = 1) WHERE id = NEW.id;
END;
