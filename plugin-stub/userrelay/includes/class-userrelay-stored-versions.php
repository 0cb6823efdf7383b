<?php
/**
 * Stored versions: what this site holds of the version rule (UserRelay_Versions), and the only
 * place that reads or writes it.
 *
 * Each user's versions, one per field group, are the usermeta userrelay_versions (a JSON
 * object, protected by its userrelay prefix); on a network the roles version is kept per blog
 * in that shared map ("roles@BLOG"). A user never stamped has implied versions (created at
 * user_registered, the others at userrelay_modified). The site's clock is the option
 * userrelay_clock ("MS.COUNTER"), which never goes back; tombstones (when a person was deleted
 * here, by email and by login) are the options userrelay_gone_*. Writing versions is
 * bookkeeping: it is never reported as a change.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * A site's clock, its users' versions and its tombstones.
 */
final class UserRelay_Stored_Versions {

	/** The usermeta holding a user's versions (JSON object of group => version). */
	const META = 'userrelay_versions';

	/** On a network, the stored roles version of blog N is "roles@N" (see stored()). */
	const ROLES_OF_BLOG = 'roles@';

	/** The option holding this site's clock ("MS.COUNTER"). */
	const CLOCK_OPTION = 'userrelay_clock';

	/** Options holding when a person was deleted here, by match key (tombstones). */
	const GONE_OPTION = 'userrelay_gone_';

	/**
	 * The user's stored versions, or null when never stamped.
	 *
	 * @param int $user_id User id.
	 */
	public static function stored( int $user_id ): ?array {
		$map = self::stored_raw( $user_id );
		if ( null === $map || ! is_multisite() ) {
			return $map;
		}
		// On a network roles are per blog (a user has a role on each), so is their version:
		// "roles@BLOG" in the shared map, read here as this blog's "roles". A map written before
		// that holds "roles", which was the primary blog's.
		$own   = self::ROLES_OF_BLOG . get_current_blog_id();
		$roles = $map[ $own ] ?? ( ( new UserRelay_Settings() )->is_primary_blog() ? ( $map['roles'] ?? null ) : null );
		foreach ( array_keys( $map ) as $group ) {
			if ( 'roles' === $group || 0 === strpos( (string) $group, self::ROLES_OF_BLOG ) ) {
				unset( $map[ $group ] );
			}
		}
		if ( is_string( $roles ) ) {
			$map['roles'] = $roles;
		}
		return $map;
	}

	/**
	 * The user's stored map as it is in the usermeta (every blog's roles on a network).
	 *
	 * @param int $user_id User id.
	 */
	private static function stored_raw( int $user_id ): ?array {
		$raw = get_user_meta( $user_id, self::META, true );
		if ( ! is_string( $raw ) || '' === $raw ) {
			return null;
		}
		$map = json_decode( $raw, true );
		return is_array( $map ) ? $map : null;
	}

	/**
	 * An unstamped user's implied versions.
	 *
	 * @param WP_User $user The user.
	 */
	public static function implied_of( WP_User $user ): array {
		$registered = strtotime( (string) $user->user_registered . ' UTC' );
		return UserRelay_Versions::implied( false === $registered ? 0.0 : (float) $registered, UserRelay_Modified::of( $user ) );
	}

	/**
	 * Every version a user holds: the stored map, or the implied one written out.
	 *
	 * @param WP_User $user The user.
	 */
	public static function of( WP_User $user ): array {
		$stored = self::stored( (int) $user->ID );
		return null === $stored ? UserRelay_Versions::materialize( self::implied_of( $user ) ) : $stored;
	}

	/**
	 * Stores a user's versions (bookkeeping: never reported).
	 *
	 * @param int   $user_id User id.
	 * @param array $map     Group => version.
	 */
	public static function store( int $user_id, array $map ): void {
		if ( is_multisite() ) {
			// This blog's roles version under its own name; the other blogs' kept as they are.
			foreach ( self::stored_raw( $user_id ) ?? array() as $group => $version ) {
				if ( 0 === strpos( (string) $group, self::ROLES_OF_BLOG ) ) {
					$map += array( $group => $version );
				}
			}
			if ( isset( $map['roles'] ) ) {
				$map[ self::ROLES_OF_BLOG . get_current_blog_id() ] = $map['roles'];
				unset( $map['roles'] );
			}
		}
		ksort( $map );
		UserRelay_Bookkeeping_Meta::write( $user_id, self::META, (string) wp_json_encode( $map, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE ) );
	}

	/**
	 * Stamps the groups a local change touched with the clock's next reading: later than the
	 * site's clock, than anything the user holds and than the physical clock. Returns the
	 * user's versions after it.
	 *
	 * @param WP_User  $user   The user.
	 * @param string[] $groups The groups changed here.
	 * @param string   $floor  A version the stamp must pass too (a tombstone), if any.
	 */
	public static function stamp( WP_User $user, array $groups, string $floor = UserRelay_Facts::MIN_VERSION ): array {
		$map     = self::of( $user );
		$after   = UserRelay_Versions::newer( UserRelay_Versions::newer( self::clock(), UserRelay_Versions::newest( $map ) ), $floor );
		$version = UserRelay_Versions::tick( $after, self::now_ms(), self::site() );
		foreach ( $groups as $group ) {
			$map[ $group ] = $version;
		}
		self::observe( $version );
		self::store( (int) $user->ID, $map );
		return $map;
	}

	/**
	 * A new reading of the site's clock, later than $after too (a delete: after every version
	 * the deleted user held).
	 *
	 * @param string $after A version the reading must pass.
	 */
	public static function next_after( string $after ): string {
		$version = UserRelay_Versions::tick( UserRelay_Versions::newer( self::clock(), $after ), self::now_ms(), self::site() );
		self::observe( $version );
		return $version;
	}

	/**
	 * The site's clock now (read from the database: another request may have moved it).
	 */
	public static function clock(): string {
		global $wpdb;
		$value = $wpdb->get_var( $wpdb->prepare( "SELECT option_value FROM {$wpdb->options} WHERE option_name = %s", self::CLOCK_OPTION ) );
		return is_string( $value ) && null !== UserRelay_Versions::parse( $value . '@' ) ? $value . '@' : UserRelay_Facts::MIN_VERSION;
	}

	/**
	 * Moves the site's clock past $version, never back: one statement, which keeps the stored
	 * reading when it is already as late (another request may have moved it meanwhile).
	 *
	 * @param string $version A version made or applied here.
	 */
	public static function observe( string $version ): void {
		global $wpdb;
		$parts = UserRelay_Versions::parse( $version );
		if ( null === $parts ) {
			return;
		}
		list( $ms, $counter ) = $parts;
		// Straight to the table: the options cache of another request would not see it anyway.
		// A reading is "ms.counter"; it is replaced only by a later one (ms, then counter).
		$wpdb->query(
			$wpdb->prepare(
				"INSERT INTO {$wpdb->options} (option_name, option_value, autoload) VALUES (%s, %s, 'no') ON DUPLICATE KEY UPDATE option_value = IF(CAST(SUBSTRING_INDEX(option_value, '.', 1) AS UNSIGNED) < %d OR (CAST(SUBSTRING_INDEX(option_value, '.', 1) AS UNSIGNED) = %d AND CAST(SUBSTRING_INDEX(option_value, '.', -1) AS UNSIGNED) < %d), VALUES(option_value), option_value)",
				self::CLOCK_OPTION,
				$ms . '.' . $counter,
				$ms,
				$ms,
				$counter
			)
		);
	}

	/**
	 * Reads the tombstones of an email and a login in one query where WordPress can (6.4+:
	 * wp_prime_option_caches()); gone() then answers from the options cache.
	 *
	 * @param string $email Email.
	 * @param string $login Login.
	 */
	public static function prime_gone( string $email, string $login ): void {
		if ( function_exists( 'wp_prime_option_caches' ) ) {
			wp_prime_option_caches( array( self::gone_option( 'email', $email ), self::gone_option( 'login', $login ) ) );
		}
	}

	/**
	 * When a person matched by $by ('email' or 'login') = $value was last deleted here, if ever.
	 *
	 * @param string $by    Match key.
	 * @param string $value Its value.
	 */
	public static function gone( string $by, string $value ): ?string {
		if ( '' === $value ) {
			return null;
		}
		$version = get_option( self::gone_option( $by, $value ), null );
		return is_string( $version ) && null !== UserRelay_Versions::parse( $version ) ? $version : null;
	}

	/**
	 * Records that the person with this email and login was deleted here at $version.
	 *
	 * @param string $email   Email.
	 * @param string $login   Login.
	 * @param string $version The delete's version.
	 */
	public static function bury( string $email, string $login, string $version ): void {
		foreach ( array( 'email' => $email, 'login' => $login ) as $by => $value ) {
			if ( '' === $value ) {
				continue; // A user without an email is known by login alone.
			}
			$name = self::gone_option( $by, $value );
			update_option( $name, UserRelay_Versions::newer( self::gone( $by, $value ), $version ), false );
		}
	}

	/**
	 * The option of a tombstone (match values may be long: hashed, lowercased as MariaDB
	 * compares them).
	 *
	 * @param string $by    Match key.
	 * @param string $value Its value.
	 */
	private static function gone_option( string $by, string $value ): string {
		return self::GONE_OPTION . md5( $by . ':' . strtolower( $value ) );
	}

	/**
	 * This site's id, as its versions name it.
	 */
	public static function site(): string {
		$site = ( new UserRelay_Settings() )->site();
		return 1 === preg_match( '/^[\x21-\x7E]{1,64}$/D', $site ) ? $site : 'unnamed';
	}

	/**
	 * The physical clock in milliseconds.
	 */
	public static function now_ms(): int {
		return (int) floor( microtime( true ) * 1000 );
	}
}
