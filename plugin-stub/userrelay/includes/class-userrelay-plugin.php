<?php
/**
 * Wiring: builds the plugin's objects, owns its tables, options and the WP-Cron schedule.
 *
 * Activation creates both tables with dbDelta(), the install id and the flush token, and
 * schedules 'userrelay_flush' every minute (so the outbox drains even when no request kicks it).
 * Deactivation only unschedules; uninstall.php removes everything.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * The plugin.
 */
final class UserRelay_Plugin {

	/** Bump when the tables change; dbDelta() then runs on the next request. */
	const DB_VERSION = '2';

	const OPTION_DB_VERSION = 'userrelay_db_version';

	/** The WP-Cron event and its interval. */
	const CRON_HOOK     = 'userrelay_flush';
	const CRON_SCHEDULE = 'userrelay_every_minute';

	/** Applied origins are kept this long; the relay resends for days (delivery.max_age, 3 d). */
	const APPLIED_RETENTION = 30 * DAY_IN_SECONDS;

	/**
	 * The objects, once booted.
	 *
	 * @var array<string, object>
	 */
	private static $parts = array();

	/**
	 * Builds the objects and adds the hooks. Called once, when the plugin loads.
	 */
	public static function boot(): void {
		$settings = new UserRelay_Settings();
		$outbox   = new UserRelay_Outbox( new UserRelay_Relay_Client( $settings ) );
		$hooks    = new UserRelay_Hooks( $settings, $outbox );
		$applier  = new UserRelay_Applier( $settings, $hooks );
		$rest     = new UserRelay_REST( $settings, $applier, $outbox );

		self::$parts = compact( 'settings', 'outbox', 'hooks', 'applier', 'rest' );

		UserRelay_Passwords::register(); // Logins on every blog: the users table is shared.
		$hooks->register();
		$rest->register(); // On a network, every blog: each is a site of its own at the relay.
		if ( is_multisite() ) {
			$network = new UserRelay_Network( $settings, $outbox );
			$network->register();
			$hooks->report_through( $network );
		}
		if ( is_admin() ) {
			( new UserRelay_Admin( $settings, $outbox ) )->register();
			( new UserRelay_Users_Screen( $settings, $outbox ) )->register();
			( new UserRelay_User_Panel( $settings ) )->register();
		}
		add_filter( 'cron_schedules', array( __CLASS__, 'cron_schedules' ) );
		add_action( self::CRON_HOOK, array( __CLASS__, 'on_cron' ) );
		add_action( 'plugins_loaded', array( __CLASS__, 'maybe_upgrade' ) );
	}

	/**
	 * The outbox (for code running in the site, e.g. tests and the admin page).
	 */
	public static function outbox(): UserRelay_Outbox {
		return self::$parts['outbox'];
	}

	/**
	 * Activation: tables, secrets, schedule.
	 */
	public static function activate(): void {
		self::install_tables();
		UserRelay_Outbox::install_id();
		UserRelay_Outbox::flush_token();
		add_filter( 'cron_schedules', array( __CLASS__, 'cron_schedules' ) );
		if ( ! wp_next_scheduled( self::CRON_HOOK ) ) {
			wp_schedule_event( time() + MINUTE_IN_SECONDS, self::CRON_SCHEDULE, self::CRON_HOOK );
		}
	}

	/**
	 * Deactivation: stop the schedule; data stays until uninstall.
	 */
	public static function deactivate(): void {
		wp_clear_scheduled_hook( self::CRON_HOOK );
	}

	/**
	 * Runs dbDelta() when the tables are older than this code (an update without reactivation).
	 */
	public static function maybe_upgrade(): void {
		if ( self::DB_VERSION !== get_option( self::OPTION_DB_VERSION ) ) {
			self::install_tables();
		}
	}

	/**
	 * Adds the every-minute interval.
	 *
	 * @param array $schedules Schedules.
	 * @return array
	 */
	public static function cron_schedules( $schedules ) {
		$schedules[ self::CRON_SCHEDULE ] = array(
			'interval' => MINUTE_IN_SECONDS,
			'display'  => __( 'Every minute (UserRelay outbox)', 'userrelay' ),
		);
		return $schedules;
	}

	/**
	 * WP-Cron: send what is due, and forget applied origins past their retention.
	 */
	public static function on_cron(): void {
		global $wpdb;
		if ( self::$parts['settings']->is_configured() ) {
			self::$parts['outbox']->flush();
		}
		$table = UserRelay_Applier::table();
		$wpdb->query( $wpdb->prepare( "DELETE FROM {$table} WHERE applied_at < %d LIMIT 1000", time() - self::APPLIED_RETENTION ) );
	}

	/**
	 * Creates or updates both tables.
	 */
	private static function install_tables(): void {
		global $wpdb;
		require_once ABSPATH . 'wp-admin/includes/upgrade.php';
		$charset = $wpdb->get_charset_collate();
		$outbox  = UserRelay_Outbox::table();
		$applied = UserRelay_Applier::table();
		// dbDelta() wants two spaces after PRIMARY KEY and one field per line.
		dbDelta(
			"CREATE TABLE {$outbox} (
  id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  event_id varchar(128) NOT NULL DEFAULT '',
  user_id bigint(20) unsigned NOT NULL,
  payload longtext NOT NULL,
  created_at bigint(20) unsigned NOT NULL,
  attempts int(10) unsigned NOT NULL DEFAULT 0,
  next_attempt_at bigint(20) unsigned NOT NULL DEFAULT 0,
  last_error text NULL,
  PRIMARY KEY  (id),
  KEY user_id (user_id)
) {$charset};
CREATE TABLE {$applied} (
  origin_site varchar(64) NOT NULL,
  origin_event_id varchar(128) NOT NULL,
  user_id bigint(20) unsigned NOT NULL DEFAULT 0,
  applied_at bigint(20) unsigned NOT NULL,
  PRIMARY KEY  (origin_site,origin_event_id),
  KEY applied_at (applied_at)
) {$charset};
" . UserRelay_Replay_Guard::schema( $charset )
		);
		update_option( self::OPTION_DB_VERSION, self::DB_VERSION, 'yes' );
	}
}
